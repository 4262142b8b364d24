-- Mirrors server/migrations/sqlite/0004_open_offers.sql in PostgreSQL's dialect (types as
-- in 0001_init.sql). SQLite's INSERT OR IGNORE is INSERT ... ON CONFLICT DO NOTHING here.
--
-- At most one open offer per component, enforced by the database: a row exists while an
-- offer of the component is proposed, accepted or scheduled. Planners that run at the
-- same time (two cycles, or two server replicas) cannot both propose the same component.
CREATE TABLE open_offer_components (
    machine_id  TEXT NOT NULL,
    component   TEXT NOT NULL,
    offer_id    TEXT NOT NULL,
    PRIMARY KEY (machine_id, component)
);
CREATE INDEX open_offer_components_by_offer ON open_offer_components (offer_id);

INSERT INTO open_offer_components (machine_id, component, offer_id)
SELECT oc.machine_id, oc.component, oc.offer_id
FROM offer_components oc JOIN offers o ON o.id = oc.offer_id
WHERE o.status IN ('proposed', 'accepted', 'scheduled')
ON CONFLICT DO NOTHING;
