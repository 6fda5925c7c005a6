"""The model stage.

The conditional UNet, the diffusion schedule and samplers, the loaded `Generator`, LoRA adapters,
CPSample protection, the diagnosis classifier network, model cards and the Hub layout.
"""
