"""Query scorers over one opened segment (`index.format.Segment`)."""
