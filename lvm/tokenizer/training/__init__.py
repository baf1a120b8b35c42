"""Training the VQGAN: the LightningModule and its losses (LPIPS, PatchGAN discriminator), codebook
initialisation, the image-folder DataModule, and `fit_tokenizer` for in-memory images (the demo)."""
