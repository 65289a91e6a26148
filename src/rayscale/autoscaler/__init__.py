"""The autoscaler loop: observe -> plan -> act; launch tracking, backoff, drain-then-stop."""
