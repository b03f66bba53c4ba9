"""Entrypoints: the `dmb` CLI, the one-machine launcher, seed data and code generation. They
start and wire everything else; nothing imports them."""
