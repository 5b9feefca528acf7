"""tww_hf: Think While Watching on Qwen3-VL as a transformers plug-in."""
