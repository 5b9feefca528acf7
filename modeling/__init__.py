"""The remote-code half of tww_hf: every file here travels to the Hub with a checkpoint (relative imports only)."""
