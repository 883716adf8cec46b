-- Runs once, on the first start of an empty PostgreSQL volume (docker-entrypoint-initdb.d), as
-- POSTGRES_USER. POSTGRES_DB creates "scheduling"; each service has its own database.
CREATE DATABASE session_record;
CREATE DATABASE messaging;
