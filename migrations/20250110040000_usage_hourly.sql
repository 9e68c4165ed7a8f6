-- Hourly usage rollups (issue 19, charts that can be read): requests, errors (status >= 400), tokens and a
-- histogram of the successful requests' latencies (proxy.storage.latency: lat00 below 4 ms, then buckets
-- growing by sqrt(2) up to 262 s, lat33 above) per UTC hour, written with each ledger row beside
-- usage_daily (proxy.storage.hourly), so the charts' hourly and daily series, latency percentiles
-- included, read rollups, never the ledger. `hour` counts whole hours since the Unix epoch.
--   usage_hourly      (hour, model): all keys; the usage page and a model's charts read it.
--   usage_hourly_key  (api_key_id, hour, model): a key's charts (api_key_id 0 is "no key"); its primary
--                     key starts with the key, so one key's hours are one range, without another index.
-- depends: 20250109100100_api_key_disabled

CREATE TABLE usage_hourly (
    hour                INTEGER NOT NULL,
    model               TEXT    NOT NULL,
    requests            INTEGER NOT NULL DEFAULT 0,
    errors              INTEGER NOT NULL DEFAULT 0,
    prompt_tokens       INTEGER NOT NULL DEFAULT 0,
    completion_tokens   INTEGER NOT NULL DEFAULT 0,
    lat00 INTEGER NOT NULL DEFAULT 0,
    lat01 INTEGER NOT NULL DEFAULT 0,
    lat02 INTEGER NOT NULL DEFAULT 0,
    lat03 INTEGER NOT NULL DEFAULT 0,
    lat04 INTEGER NOT NULL DEFAULT 0,
    lat05 INTEGER NOT NULL DEFAULT 0,
    lat06 INTEGER NOT NULL DEFAULT 0,
    lat07 INTEGER NOT NULL DEFAULT 0,
    lat08 INTEGER NOT NULL DEFAULT 0,
    lat09 INTEGER NOT NULL DEFAULT 0,
    lat10 INTEGER NOT NULL DEFAULT 0,
    lat11 INTEGER NOT NULL DEFAULT 0,
    lat12 INTEGER NOT NULL DEFAULT 0,
    lat13 INTEGER NOT NULL DEFAULT 0,
    lat14 INTEGER NOT NULL DEFAULT 0,
    lat15 INTEGER NOT NULL DEFAULT 0,
    lat16 INTEGER NOT NULL DEFAULT 0,
    lat17 INTEGER NOT NULL DEFAULT 0,
    lat18 INTEGER NOT NULL DEFAULT 0,
    lat19 INTEGER NOT NULL DEFAULT 0,
    lat20 INTEGER NOT NULL DEFAULT 0,
    lat21 INTEGER NOT NULL DEFAULT 0,
    lat22 INTEGER NOT NULL DEFAULT 0,
    lat23 INTEGER NOT NULL DEFAULT 0,
    lat24 INTEGER NOT NULL DEFAULT 0,
    lat25 INTEGER NOT NULL DEFAULT 0,
    lat26 INTEGER NOT NULL DEFAULT 0,
    lat27 INTEGER NOT NULL DEFAULT 0,
    lat28 INTEGER NOT NULL DEFAULT 0,
    lat29 INTEGER NOT NULL DEFAULT 0,
    lat30 INTEGER NOT NULL DEFAULT 0,
    lat31 INTEGER NOT NULL DEFAULT 0,
    lat32 INTEGER NOT NULL DEFAULT 0,
    lat33 INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, model)
) WITHOUT ROWID;

CREATE TABLE usage_hourly_key (
    api_key_id          INTEGER NOT NULL,
    hour                INTEGER NOT NULL,
    model               TEXT    NOT NULL,
    requests            INTEGER NOT NULL DEFAULT 0,
    errors              INTEGER NOT NULL DEFAULT 0,
    prompt_tokens       INTEGER NOT NULL DEFAULT 0,
    completion_tokens   INTEGER NOT NULL DEFAULT 0,
    lat00 INTEGER NOT NULL DEFAULT 0,
    lat01 INTEGER NOT NULL DEFAULT 0,
    lat02 INTEGER NOT NULL DEFAULT 0,
    lat03 INTEGER NOT NULL DEFAULT 0,
    lat04 INTEGER NOT NULL DEFAULT 0,
    lat05 INTEGER NOT NULL DEFAULT 0,
    lat06 INTEGER NOT NULL DEFAULT 0,
    lat07 INTEGER NOT NULL DEFAULT 0,
    lat08 INTEGER NOT NULL DEFAULT 0,
    lat09 INTEGER NOT NULL DEFAULT 0,
    lat10 INTEGER NOT NULL DEFAULT 0,
    lat11 INTEGER NOT NULL DEFAULT 0,
    lat12 INTEGER NOT NULL DEFAULT 0,
    lat13 INTEGER NOT NULL DEFAULT 0,
    lat14 INTEGER NOT NULL DEFAULT 0,
    lat15 INTEGER NOT NULL DEFAULT 0,
    lat16 INTEGER NOT NULL DEFAULT 0,
    lat17 INTEGER NOT NULL DEFAULT 0,
    lat18 INTEGER NOT NULL DEFAULT 0,
    lat19 INTEGER NOT NULL DEFAULT 0,
    lat20 INTEGER NOT NULL DEFAULT 0,
    lat21 INTEGER NOT NULL DEFAULT 0,
    lat22 INTEGER NOT NULL DEFAULT 0,
    lat23 INTEGER NOT NULL DEFAULT 0,
    lat24 INTEGER NOT NULL DEFAULT 0,
    lat25 INTEGER NOT NULL DEFAULT 0,
    lat26 INTEGER NOT NULL DEFAULT 0,
    lat27 INTEGER NOT NULL DEFAULT 0,
    lat28 INTEGER NOT NULL DEFAULT 0,
    lat29 INTEGER NOT NULL DEFAULT 0,
    lat30 INTEGER NOT NULL DEFAULT 0,
    lat31 INTEGER NOT NULL DEFAULT 0,
    lat32 INTEGER NOT NULL DEFAULT 0,
    lat33 INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (api_key_id, hour, model)
) WITHOUT ROWID;

-- The history so far, in the buckets of proxy.storage.latency.bucket_of (a test holds them equal):
-- each key's hours from the ledger, then all keys' hours from those.
-- backfill:
INSERT INTO usage_hourly_key (api_key_id, hour, model, requests, errors, prompt_tokens, completion_tokens,
    lat00, lat01, lat02, lat03, lat04, lat05, lat06, lat07, lat08, lat09, lat10, lat11,
    lat12, lat13, lat14, lat15, lat16, lat17, lat18, lat19, lat20, lat21, lat22, lat23,
    lat24, lat25, lat26, lat27, lat28, lat29, lat30, lat31, lat32, lat33)
SELECT api_key_id, hour, model, COUNT(*), SUM(status >= 400), SUM(prompt_tokens), SUM(completion_tokens),
       SUM(b = 0), SUM(b = 1), SUM(b = 2), SUM(b = 3), SUM(b = 4), SUM(b = 5), SUM(b = 6), SUM(b = 7), SUM(b = 8),
       SUM(b = 9), SUM(b = 10), SUM(b = 11), SUM(b = 12), SUM(b = 13), SUM(b = 14), SUM(b = 15), SUM(b = 16), SUM(b = 17),
       SUM(b = 18), SUM(b = 19), SUM(b = 20), SUM(b = 21), SUM(b = 22), SUM(b = 23), SUM(b = 24), SUM(b = 25), SUM(b = 26),
       SUM(b = 27), SUM(b = 28), SUM(b = 29), SUM(b = 30), SUM(b = 31), SUM(b = 32), SUM(b = 33)
FROM (SELECT COALESCE(api_key_id, 0) AS api_key_id, CAST(created_at / 3600 AS INTEGER) AS hour, model, status,
             prompt_tokens, completion_tokens,
             CASE WHEN status >= 400 OR latency_ms IS NULL THEN -1 ELSE
                  CASE WHEN latency_ms < 4.0 THEN 0 WHEN latency_ms < 5.7 THEN 1 WHEN latency_ms
                  < 8.0 THEN 2 WHEN latency_ms < 11.3 THEN 3 WHEN latency_ms < 16.0 THEN 4 WHEN
                  latency_ms < 22.6 THEN 5 WHEN latency_ms < 32.0 THEN 6 WHEN latency_ms < 45.3
                  THEN 7 WHEN latency_ms < 64.0 THEN 8 WHEN latency_ms < 90.5 THEN 9 WHEN
                  latency_ms < 128.0 THEN 10 WHEN latency_ms < 181.0 THEN 11 WHEN latency_ms <
                  256.0 THEN 12 WHEN latency_ms < 362.0 THEN 13 WHEN latency_ms < 512.0 THEN 14
                  WHEN latency_ms < 724.1 THEN 15 WHEN latency_ms < 1024.0 THEN 16 WHEN
                  latency_ms < 1448.2 THEN 17 WHEN latency_ms < 2048.0 THEN 18 WHEN latency_ms <
                  2896.3 THEN 19 WHEN latency_ms < 4096.0 THEN 20 WHEN latency_ms < 5792.6 THEN
                  21 WHEN latency_ms < 8192.0 THEN 22 WHEN latency_ms < 11585.2 THEN 23 WHEN
                  latency_ms < 16384.0 THEN 24 WHEN latency_ms < 23170.5 THEN 25 WHEN latency_ms
                  < 32768.0 THEN 26 WHEN latency_ms < 46341.0 THEN 27 WHEN latency_ms < 65536.0
                  THEN 28 WHEN latency_ms < 92681.9 THEN 29 WHEN latency_ms < 131072.0 THEN 30
                  WHEN latency_ms < 185363.8 THEN 31 WHEN latency_ms < 262144.0 THEN 32 ELSE 33
                  END
             END AS b
      FROM token_usage_events)
GROUP BY api_key_id, hour, model;

INSERT INTO usage_hourly (hour, model, requests, errors, prompt_tokens, completion_tokens,
    lat00, lat01, lat02, lat03, lat04, lat05, lat06, lat07, lat08, lat09, lat10, lat11,
    lat12, lat13, lat14, lat15, lat16, lat17, lat18, lat19, lat20, lat21, lat22, lat23,
    lat24, lat25, lat26, lat27, lat28, lat29, lat30, lat31, lat32, lat33)
SELECT hour, model, SUM(requests), SUM(errors), SUM(prompt_tokens), SUM(completion_tokens),
       SUM(lat00), SUM(lat01), SUM(lat02), SUM(lat03), SUM(lat04), SUM(lat05), SUM(lat06), SUM(lat07), SUM(lat08),
       SUM(lat09), SUM(lat10), SUM(lat11), SUM(lat12), SUM(lat13), SUM(lat14), SUM(lat15), SUM(lat16), SUM(lat17),
       SUM(lat18), SUM(lat19), SUM(lat20), SUM(lat21), SUM(lat22), SUM(lat23), SUM(lat24), SUM(lat25), SUM(lat26),
       SUM(lat27), SUM(lat28), SUM(lat29), SUM(lat30), SUM(lat31), SUM(lat32), SUM(lat33)
FROM usage_hourly_key
GROUP BY hour, model;
