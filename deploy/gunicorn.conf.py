"""gunicorn settings for Acai OMR: `gunicorn -c deploy/gunicorn.conf.py acai_omr.wsgi:app`.

Jobs, their progress and the loaded model live in the worker process (an
in-process queue and thread pool), so run ONE worker process; its threads serve
requests while inference runs in the app's own bounded pool (WebConfig.pool_size).
Progress streams (server-sent events) hold a thread each, so the app keeps at most
WebConfig.max_streams (ACAI_MAX_STREAMS, 4) open and ends each after a minute; further
watchers are told to poll. Keep `threads` well above that number.
"""

import os

bind = os.environ.get("ACAI_BIND", "127.0.0.1:8000")
workers = 1  # must stay 1: job state is in-process
worker_class = "gthread"
threads = int(os.environ.get("ACAI_THREADS", "12"))  # at most ACAI_MAX_STREAMS (4) of them serve progress streams
timeout = 180  # an upload of a long PDF runs page detection inside the request
graceful_timeout = 30
keepalive = 5
limit_request_line = 8190
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("ACAI_LOG_LEVEL", "info")
# the app (thread pool, model holder) is built in the worker, never before a fork
preload_app = False
