"""Adapters: the outside world (libvirt, image and volume directories) behind domain.ports."""
