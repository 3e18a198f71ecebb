-- SSH key pairs (an Atelier extension): public keys a project registers by name.
CREATE TABLE keypairs (
    project_id  TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    algorithm   TEXT NOT NULL,
    create_at   INTEGER NOT NULL,
    PRIMARY KEY (project_id, name)
);
