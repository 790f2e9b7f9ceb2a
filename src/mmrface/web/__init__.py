"""mmrface.web: the server of `mmrface serve` — HTTP API (`api`), Gradio UI (`ui`), both in one
ASGI app (`app.create_app`). Importing `mmrface.web.api` does not import Gradio."""
