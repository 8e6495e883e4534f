"""fairfer: measure and mitigate demographic bias in facial emotion recognition."""
