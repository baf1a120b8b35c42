"""Builders that turn folders of images, videos and annotations into visual sentences."""
