"""The FAL video transformer: attention, schemes, embeddings, encoder, presets."""
