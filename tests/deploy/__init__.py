"""Tests of how the project ships: release files, wheel, demo, container image, manifests."""
