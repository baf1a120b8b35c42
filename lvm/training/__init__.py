"""Training-time callbacks: the visual-prompt gallery (`prompt_gallery.PromptGallery`)."""
