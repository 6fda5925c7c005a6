"""The train stage.

Pretraining and few-shot adaptation on Ray Train (resumable, tracked), the shared train step,
checkpoints and the CPSample protection classifier's training.
"""
