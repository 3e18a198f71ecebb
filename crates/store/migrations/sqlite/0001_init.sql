CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    domain_id   TEXT NOT NULL,
    domain_name TEXT NOT NULL,
    is_admin    INTEGER NOT NULL,
    create_at   INTEGER NOT NULL
);

CREATE TABLE projects (
    id        TEXT PRIMARY KEY,
    name      TEXT NOT NULL UNIQUE,
    create_at INTEGER NOT NULL
);

CREATE TABLE project_members (
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (project_id, user_id)
);

CREATE TABLE credentials (
    access_key  TEXT PRIMARY KEY,
    secret_key  TEXT NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    description TEXT NOT NULL,
    create_at   INTEGER NOT NULL
);

CREATE TABLE access_tokens (
    token_sha256 TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    project_id   TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    expires_at   INTEGER NOT NULL,
    create_at    INTEGER NOT NULL
);

CREATE TABLE images (
    id         TEXT PRIMARY KEY,
    project_id TEXT REFERENCES projects(id) ON DELETE CASCADE,
    status     TEXT NOT NULL,
    create_at  INTEGER NOT NULL,
    body       TEXT NOT NULL
);

-- The queryable columns are copies of fields in `body` (the full record as JSON).
CREATE TABLE notebooks (
    id         TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    user_id    TEXT NOT NULL,
    status     TEXT NOT NULL,
    create_at  INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX notebooks_by_project ON notebooks (project_id, create_at);
CREATE INDEX notebooks_by_status ON notebooks (status);
