"""dva: Diffusion Video Autoencoders for face video editing, at cluster scale."""
