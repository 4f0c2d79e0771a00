-- compat: GET /instances/count groups an organization's instances by
-- element; paging (GET /instances) uses the existing (organization_id, seq)
-- index as its keyset.
CREATE INDEX instances_organization_element ON instances (organization_id, element_key);
