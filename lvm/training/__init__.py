"""Training the LVM with Lightning: the LightningModule, the strategies (DDP, FSDP2, XLA) and the order
parallelisms are applied in, optimizer and schedule factories, throughput/MFU, atomic checkpoint
writing, and callbacks (the visual-prompt gallery)."""
