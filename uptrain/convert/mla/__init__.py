"""`uptrain convert --target mla`: multi-head latent attention in transformers' DeepseekV3 format."""
