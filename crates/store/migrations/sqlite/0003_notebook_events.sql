-- What happened to each notebook, numbered per notebook; written in the same transaction as
-- the notebook change it describes.
CREATE TABLE notebook_events (
    notebook_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    level       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    message     TEXT NOT NULL,
    status      TEXT NOT NULL,
    step        INTEGER,
    step_status TEXT,
    PRIMARY KEY (notebook_id, seq)
);
