"""LVM: Large Vision Models in PyTorch."""
