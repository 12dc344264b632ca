"""Mask refinement (Sec. 3, "Mask Refinement"; Sec. 4.1, "Refinement Network").

The light head of the paper: a decoder of four ConvLSTM layers in the style of
RVOS. It works coarse to fine, one ConvLSTM per backbone scale:

    level conv5 (stride 32) -> conv4 (16) -> conv3 (8) -> conv2 (4)

and the input of the ConvLSTM at each level is the concatenation of

* the backbone feature of that level, reduced by a 1x1 conv to ``width`` channels,
* the (bilinearly upsampled) hidden state of the previous, coarser ConvLSTM
  (nothing at conv5),
* the matched mask P-hat_i (Eq. 8) resized to that scale,
* the template mask r_i (the first-frame mask) resized to that scale.

A final 1x1 conv maps the conv2 hidden state to one logit map per object, which
is upsampled to the frame size. All objects of all videos form one batch of
B * n; the hidden and cell states of every level are carried to the next frame
("carry over the memory and hidden states to the next time step").

Two ways to use it (``ModelConfig.refine_mode``, see :class:`dmmlib.model.DMMNet`):

* ``"plain"`` -- the paper's head: its output *is* the mask logit. Randomly
  initialised, it starts from noise around its bias and, early in training, learns
  "background everywhere" before it learns where the object is (chapter 8 measures it).
* ``"pass-through"`` (our deviation, the default) -- the head predicts a *correction*
  added to the logit of the matched proposal. Its last layer starts at zero
  (``zero_output=True``), so an untrained head outputs exactly the matching result and
  training can only start from there.

``levels`` may be a subset of conv2..conv5 (coarse to fine, whatever is given): a backbone
without conv5 (our CPU detector trunk) refines from conv4 down to conv2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dmmlib.features import LEVELS

# One (hidden, cell) pair per level, coarse to fine; each [B * n, width, h_level, w_level].
LSTMState = list[tuple[torch.Tensor, torch.Tensor]]


class ConvLSTMCell(nn.Module):
    """A convolutional LSTM cell (Shi et al. 2015, the paper's ref. [32]).

    Gates from one convolution over [input, hidden]:
        i, f, o = sigmoid(.), g = tanh(.);  c' = f * c + i * g;  h' = o * tanh(c').
    x [N, in_channels, h, w], state (h, c) [N, hidden_channels, h, w] or None (zeros).
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3):
        super().__init__()
        self.hidden_channels = hidden_channels
        self.gates = nn.Conv2d(in_channels + hidden_channels, 4 * hidden_channels, kernel_size, padding=kernel_size // 2)
        # Forget-gate bias 1: the usual LSTM trick so memory is kept early in training.
        with torch.no_grad():
            self.gates.bias.zero_()
            self.gates.bias[hidden_channels : 2 * hidden_channels].fill_(1.0)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_channels, *x.shape[-2:])
            state = (zeros, zeros)
        hidden, cell = state
        i, f, o, g = self.gates(torch.cat([x, hidden], dim=1)).chunk(4, dim=1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        hidden = torch.sigmoid(o) * torch.tanh(cell)
        return hidden, cell


class RefinementHead(nn.Module):
    """One ConvLSTM per level (four: conv5 to conv2), producing one refined logit map per object.

    feature_channels: channels of ``levels`` (in :data:`dmmlib.features.LEVELS` order; default
    conv2..conv5). width: channels of each reduced feature and of each ConvLSTM state.
    zero_output: start the last 1x1 conv at zero, so the head outputs 0 until it has trained
    (the pass-through head's correction).
    """

    def __init__(self, feature_channels: tuple[int, ...], width: int = 32, levels: tuple[str, ...] = LEVELS,
                 zero_output: bool = False):
        super().__init__()
        levels = tuple(level for level in LEVELS if level in levels)
        self.levels = tuple(reversed(levels))  # coarse to fine
        channels = dict(zip(levels, feature_channels))
        self.reduce = nn.ModuleDict({level: nn.Conv2d(channels[level], width, 1) for level in self.levels})
        cells = {}
        for k, level in enumerate(self.levels):
            previous = 0 if k == 0 else width
            cells[level] = ConvLSTMCell(width + previous + 2, width)
        self.cells = nn.ModuleDict(cells)
        self.to_logit = nn.Conv2d(width, 1, 1)
        if zero_output:
            nn.init.zeros_(self.to_logit.weight)
            nn.init.zeros_(self.to_logit.bias)

    def forward(
        self,
        feature_maps: dict[str, torch.Tensor],
        matched_masks: torch.Tensor,
        template_masks: torch.Tensor,
        state: LSTMState | None = None,
    ) -> tuple[torch.Tensor, LSTMState]:
        """feature maps {level: [B, C, h, w]}, matched_masks and template_masks [B, n, H, W],
        state from the previous frame (None at the start) -> (logits [B, n, H, W], new state).
        """
        b, n, height, width = matched_masks.shape
        masks = torch.stack([matched_masks, template_masks], dim=2).flatten(0, 1)  # [B*n, 2, H, W]
        hidden = None
        new_state: LSTMState = []
        for k, level in enumerate(self.levels):
            fmap = feature_maps[level]
            size = fmap.shape[-2:]
            # Reduce once per frame, then share across that frame's n objects.
            skip = self.reduce[level](fmap).repeat_interleave(n, dim=0)  # [B*n, width, h, w]
            parts = [skip]
            if hidden is not None:
                parts.append(F.interpolate(hidden, size=size, mode="bilinear", align_corners=False))
            parts.append(F.interpolate(masks, size=size, mode="bilinear", align_corners=False, antialias=True))
            hidden, cell = self.cells[level](torch.cat(parts, dim=1), None if state is None else state[k])
            new_state.append((hidden, cell))
        logits = self.to_logit(hidden)
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        return logits.view(b, n, height, width), new_state
