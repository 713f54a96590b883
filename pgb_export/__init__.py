"""pgb-export: PGB-prune fine-tuned BERT classifiers and deploy them."""

__version__ = "0.1.0"
