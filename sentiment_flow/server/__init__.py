"""The team server: `mlflow server` on PostgreSQL with proxied artifacts and, with --auth, MLflow's basic-auth app.

app.py starts and stops it; postgres.py runs the embedded PostgreSQL, reachable by this user alone; reaper.py
stops both when the starting process dies; users.py adds users with a role (`sentiment-flow add-user`).
"""
