import os

import urllib3
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.urls import path

_http = urllib3.PoolManager()


def health(request):
    return HttpResponse("ok")


def stock(request, item_id):
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::int + 7", [item_id])
        (value,) = cursor.fetchone()
    outbound = _http.request("GET", os.environ["OUTBOUND_URL"], timeout=5).status
    return JsonResponse({"pid": os.getpid(), "value": value, "outbound": outbound})


urlpatterns = [path("health", health), path("stock/<int:item_id>", stock)]
