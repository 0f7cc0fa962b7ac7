"""Training-side code: building, porting and fine-tuning the age model (runs off the device)."""
