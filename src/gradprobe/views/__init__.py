"""Views: plots, report and other renderings of gradprobe records and predictions."""
