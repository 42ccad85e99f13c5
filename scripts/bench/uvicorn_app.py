# The Uvicorn side of the benchmarks: the same 13-byte body; /echo streams the body back.
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/echo":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        while True:
            msg = await receive()
            more = msg.get("more_body", False)
            await send({"type": "http.response.body", "body": msg.get("body", b""), "more_body": more})
            if not more:
                return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": b"Hello, World!"})
