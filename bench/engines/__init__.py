"""Engines beyond the Hugging Face reference: vLLM in the worker, any OpenAI server under load."""
