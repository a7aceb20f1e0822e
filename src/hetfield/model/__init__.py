"""Neural fields, the tilt-set encoder, latent/score/pose tables, and the renderer tying them together."""
