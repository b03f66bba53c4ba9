-- Finding people (issue 15 item 4): prefix search on the username and on the display name.
-- Each index is (text COLLATE "C", id): "C" whatever the database's collation, so that
-- `LIKE 'ada%'` becomes an index range scan (a collation-aware btree cannot serve LIKE), read in
-- the (text, id) order the search pages by; the two ranges are merged, never sorted whole.
CREATE INDEX users_username_search ON users ((username COLLATE "C"), id);
CREATE INDEX users_display_name_search ON users ((lower(display_name) COLLATE "C"), id);
