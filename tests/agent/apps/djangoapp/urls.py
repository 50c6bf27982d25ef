import os
import time

import urllib3
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.gzip import gzip_page

_http = urllib3.PoolManager()


def health(request):
    return HttpResponse("ok")


def stock(request, item_id):
    time.sleep(float(os.environ.get("APP_SLEEP", "0")))  # lets concurrent requests spread over workers
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::int + 7", [item_id])
        (value,) = cursor.fetchone()
    outbound = _http.request("GET", os.environ["OUTBOUND_URL"], timeout=5).status
    return JsonResponse({"pid": os.getpid(), "value": value, "outbound": outbound})


# Long enough for Django's gzip to compress it (it leaves bodies under 200 bytes alone).
PAGE = (
    "<!doctype html><html><head><title>Stock</title></head><body>"
    + "".join(f"<p>item {n}: in stock</p>" for n in range(20))
    + "</body></html>"
).encode()


def page(request):
    # With its length, as a server or middleware would set it: the agent must drop it
    # where the page grows, and leave it alone where it does not (HEAD).
    response = HttpResponse(PAGE, content_type="text/html; charset=utf-8")
    response["Content-Length"] = str(len(PAGE))
    return response


urlpatterns = [
    path("health", health),
    path("stock/<int:item_id>", stock),
    path("page", page),
    # Compressed by Django, which sets Content-Length to the compressed size.
    path("page/compressed", gzip_page(page)),
]
