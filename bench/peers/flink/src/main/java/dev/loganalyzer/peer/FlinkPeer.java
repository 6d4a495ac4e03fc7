package dev.loganalyzer.peer;

import org.apache.flink.configuration.Configuration;
import org.apache.flink.table.api.EnvironmentSettings;
import org.apache.flink.table.api.TableEnvironment;
import org.apache.flink.table.api.TableResult;

import java.util.HashMap;
import java.util.Map;
import java.util.TimeZone;

/**
 * log-analyzer's jobs done the way a Flink user would: Flink SQL in a local mini-cluster (this JVM).
 *
 * <pre>
 *   FlinkPeer ingest  --brokers H:P --topic T --group G --jdbc URL --table logs_flink_in [--parallelism 2] [--batch 5000]
 *   FlinkPeer windows --brokers H:P --topic T --group G --jdbc URL --table flink_windows [--lateness-seconds 180]
 * </pre>
 *
 * Both read the topic from the earliest offset up to the end offsets seen at start (bounded), so the
 * job finishes when everything present is processed. {@code ingest} writes every event as a row of
 * the {@code logs} shape through the JDBC sink (batched INSERTs); {@code windows} writes the
 * 10-second tumbling event-time windows' total and error counts per service. The JDBC URL should
 * carry {@code stringtype=unspecified} (tokens and attrs travel as text that PostgreSQL casts to
 * text[] and jsonb) and {@code reWriteBatchedInserts=true} (multi-row INSERTs). Prints one line
 * {@code flink-peer: job=... seconds=...} (planning and job submission to completion, excluding JVM
 * start) on stdout.
 */
public final class FlinkPeer {
    private FlinkPeer() {}

    public static void main(String[] argv) throws Exception {
        // Before any logger exists: slf4j-simple at warn (Flink logs every step at info).
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel",
                System.getProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn"));
        // The JDBC sink has no TIMESTAMP_LTZ converter ("Unsupported type:TIMESTAMP_LTZ(3)"): times go
        // out as TIMESTAMP in UTC, and the driver sends them with the JVM's zone, so that must be UTC.
        TimeZone.setDefault(TimeZone.getTimeZone("UTC"));
        if (argv.length < 1 || !(argv[0].equals("ingest") || argv[0].equals("windows"))) {
            System.err.println("usage: FlinkPeer ingest|windows --brokers H:P --topic T --group G --jdbc URL"
                    + " --table NAME [--parallelism N] [--batch ROWS] [--lateness-seconds S]");
            System.exit(2);
        }
        Map<String, String> a = new HashMap<>();
        for (int i = 1; i + 1 < argv.length; i += 2) {
            a.put(argv[i].replaceFirst("^--", ""), argv[i + 1]);
        }
        String job = argv[0];
        int parallelism = Integer.parseInt(a.getOrDefault("parallelism", "2"));

        Configuration conf = new Configuration();
        conf.setString("parallelism.default", String.valueOf(parallelism));
        conf.setString("pipeline.object-reuse", "true");
        conf.setString("table.local-time-zone", "UTC");
        conf.setString("table.exec.resource.default-parallelism", String.valueOf(parallelism));
        TableEnvironment env = TableEnvironment.create(
                EnvironmentSettings.newInstance().inStreamingMode().withConfiguration(conf).build());

        env.executeSql(sourceDdl(a, job.equals("windows")));
        env.createTemporarySystemFunction("tokens", Tokens.class);
        // The event's level as log-analyzer stores it (DESIGN §4); NULL for an unknown level.
        env.executeSql("CREATE TEMPORARY VIEW events AS SELECT "
                + " ev_ts,"
                + " CAST(CASE LOWER(level) WHEN 'trace' THEN 0 WHEN 'debug' THEN 1 WHEN 'info' THEN 2"
                + "   WHEN 'warn' THEN 3 WHEN 'warning' THEN 3 WHEN 'error' THEN 4 WHEN 'fatal' THEN 5"
                + "   WHEN 'critical' THEN 5 END AS SMALLINT) AS lvl,"
                + " service, user_id, message, host, region, request_id, seq, trace_id,"
                + " kafka_topic, kafka_partition, kafka_offset"
                + " FROM kafka_events");

        String insert;
        if (job.equals("ingest")) {
            env.executeSql("CREATE TABLE sink (ts TIMESTAMP(3), level SMALLINT, service STRING,"
                    + " user_id STRING, message STRING, tokens STRING, attrs STRING, topic STRING,"
                    + " kafka_partition INT, kafka_offset BIGINT) WITH (" + jdbcOptions(a) + ")");
            insert = "INSERT INTO sink SELECT CAST(ev_ts AS TIMESTAMP(3)), lvl, service, user_id, message, tokens(message),"
                    + " JSON_OBJECT('host' VALUE host, 'region' VALUE region, 'request_id' VALUE request_id,"
                    + "   'seq' VALUE seq, 'trace_id' VALUE trace_id ABSENT ON NULL),"
                    + " kafka_topic, kafka_partition, kafka_offset"
                    + " FROM events WHERE lvl IS NOT NULL AND service IS NOT NULL AND message IS NOT NULL";
        } else {
            env.executeSql("CREATE TABLE sink (window_start TIMESTAMP(3), service STRING, total BIGINT,"
                    + " errors BIGINT) WITH (" + jdbcOptions(a) + ")");
            // Event-time windows need a watermark: it lags the newest event time by --lateness-seconds
            // (the generator's late events are up to 2 minutes old), so late events still count.
            env.executeSql("CREATE TEMPORARY VIEW valid AS SELECT * FROM events"
                    + " WHERE lvl IS NOT NULL AND service IS NOT NULL AND message IS NOT NULL");
            insert = "INSERT INTO sink SELECT CAST(window_start AS TIMESTAMP(3)), service, COUNT(*) AS total,"
                    + " COUNT(*) FILTER (WHERE lvl >= 4) AS errors"
                    + " FROM TABLE(TUMBLE(TABLE valid, DESCRIPTOR(ev_ts), INTERVAL '10' SECOND))"
                    + " GROUP BY window_start, window_end, service";
        }
        long t0 = System.nanoTime();
        TableResult result = env.executeSql(insert);
        result.await();
        double seconds = (System.nanoTime() - t0) / 1e9;
        System.out.printf("flink-peer: job=%s seconds=%.2f%n", job, seconds);
    }

    private static String sourceDdl(Map<String, String> a, boolean windows) {
        return "CREATE TABLE kafka_events ("
                + " ts BIGINT, level STRING, service STRING, user_id STRING, message STRING,"
                // The generator's extra keys; log-analyzer keeps whatever extra keys arrive in attrs,
                // the JSON format only the declared ones.
                + " host STRING, region STRING, request_id STRING, seq BIGINT, trace_id STRING,"
                + " kafka_ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,"
                + " kafka_topic STRING METADATA FROM 'topic' VIRTUAL,"
                + " kafka_partition INT METADATA FROM 'partition' VIRTUAL,"
                + " kafka_offset BIGINT METADATA FROM 'offset' VIRTUAL,"
                // ts is epoch milliseconds (what the generator sends); missing: the Kafka timestamp.
                + " ev_ts AS COALESCE(TO_TIMESTAMP_LTZ(ts, 3), kafka_ts)"
                + (windows
                        ? ", WATERMARK FOR ev_ts AS ev_ts - " + lateness(a)
                        : "")
                + ") WITH ("
                + " 'connector' = 'kafka',"
                + " 'topic' = '" + req(a, "topic") + "',"
                + " 'properties.bootstrap.servers' = '" + req(a, "brokers") + "',"
                + " 'properties.group.id' = '" + req(a, "group") + "',"
                + " 'scan.startup.mode' = 'earliest-offset',"
                + " 'scan.bounded.mode' = 'latest-offset',"
                + " 'format' = 'json',"
                + " 'json.ignore-parse-errors' = 'true')";
    }

    /** --lateness-seconds (default 180) as an interval literal (SECOND alone stops at 99). */
    private static String lateness(Map<String, String> a) {
        int s = Integer.parseInt(a.getOrDefault("lateness-seconds", "180"));
        return String.format("INTERVAL '%d:%02d' MINUTE TO SECOND", s / 60, s % 60);
    }

    private static String jdbcOptions(Map<String, String> a) {
        return " 'connector' = 'jdbc',"
                + " 'url' = '" + req(a, "jdbc") + "',"
                + " 'table-name' = '" + req(a, "table") + "',"
                + " 'sink.buffer-flush.max-rows' = '" + a.getOrDefault("batch", "5000") + "',"
                + " 'sink.buffer-flush.interval' = '1s'";
    }

    private static String req(Map<String, String> a, String key) {
        String v = a.get(key);
        if (v == null) {
            throw new IllegalArgumentException("missing --" + key);
        }
        return v;
    }
}
