"""Publishing to the Hugging Face Hub: the model card, its inputs, and the upload with retries."""
