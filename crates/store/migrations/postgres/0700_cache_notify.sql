-- Issue 19 (cache): every change to a row the servers cache (an instance, a
-- user's or an organization's secret) sends `pg_notify('elements_cache', ...)`
-- from inside the writing transaction, so PostgreSQL delivers it at commit
-- and never for a rolled-back write. Every replica listens and drops what it
-- cached (crates/server/src/cache). Payloads carry ids only, never a value:
-- `i:<instance id>`, `u:<user id>`, `o:<organization id>`.

CREATE FUNCTION elements_cache_notify() RETURNS trigger AS $$
DECLARE
    prefix text := CASE TG_TABLE_NAME
        WHEN 'instances' THEN 'i:'
        WHEN 'users' THEN 'u:'
        ELSE 'o:'
    END;
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('elements_cache', prefix || OLD.id::text);
        RETURN OLD;
    END IF;
    PERFORM pg_notify('elements_cache', prefix || NEW.id::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER instances_cache_notify AFTER UPDATE OR DELETE ON instances
    FOR EACH ROW EXECUTE FUNCTION elements_cache_notify();
CREATE TRIGGER users_cache_notify AFTER UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION elements_cache_notify();
CREATE TRIGGER organizations_cache_notify AFTER UPDATE OR DELETE ON organizations
    FOR EACH ROW EXECUTE FUNCTION elements_cache_notify();
