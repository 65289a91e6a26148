"""The autoscaler loop: observe -> plan -> act, with launch tracking, backoff and drain-before-stop."""
