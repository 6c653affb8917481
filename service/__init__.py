"""The FastAPI search service (a later issue); nothing here yet is wired into `lsr`."""
