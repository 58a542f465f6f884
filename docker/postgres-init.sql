-- One Postgres for both services: a database each (the official image creates only POSTGRES_DB).
CREATE DATABASE prefect;
CREATE DATABASE mlflow;
