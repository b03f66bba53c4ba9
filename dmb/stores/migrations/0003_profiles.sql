-- Profiles (issue 15 item 1): a display name and a bio, bounded in the protos and here too,
-- so a writer that bypasses the RPC boundary still cannot store more.
ALTER TABLE users
    ADD COLUMN display_name text NOT NULL DEFAULT '',
    ADD COLUMN bio          text NOT NULL DEFAULT '',
    ADD CONSTRAINT users_display_name_length CHECK (char_length(display_name) <= 64),
    ADD CONSTRAINT users_bio_length CHECK (char_length(bio) <= 300);
