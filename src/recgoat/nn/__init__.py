"""Neural building blocks (layers and losses) shared by the models."""
