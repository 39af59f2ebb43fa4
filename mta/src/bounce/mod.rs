//! Bounce handling: classify SMTP replies and bounce messages into PowerMTA categories; build DSNs.
