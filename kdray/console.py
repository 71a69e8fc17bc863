"""Progress lines for people watching a study: one line each, prefixed, flushed at once."""


def say(message: str) -> None:
    print(f"[kdray] {message}", flush=True)
