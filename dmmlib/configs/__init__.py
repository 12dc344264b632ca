"""The YAML configs shipped with dmmlib (package data): one per profile, and the paper's DAVIS 2017 / YouTube-VOS settings."""
