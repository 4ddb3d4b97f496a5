package kopd.it;

import static kopd.it.Util.get;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.LogTruncationException;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * The operator tools of Apache Kafka 4.4.0 that read a broker's state, against a single kopd
 * node of two cores (two brokers): kafka-transactions.sh describe-producers,
 * kafka-log-dirs.sh, kafka-client-metrics.sh --list, kafka-features.sh describe,
 * kafka-leader-election.sh and kafka-reassign-partitions.sh --list; and the consumer's
 * leader-epoch validation (KIP-320), which runs on OffsetForLeaderEpoch.
 */
class OperatorToolsTest {
    @TempDir
    static Path dataDir;

    @TempDir
    static Path scratch;

    static Kopd kopd;

    static final String TOPIC = "ops";
    static final int RECORDS = 10;

    @BeforeAll
    static void start() throws Exception {
        kopd = Kopd.start(dataDir, 2);
        try (Admin admin = kopd.admin()) {
            get(admin.createTopics(List.of(new NewTopic(TOPIC, 2, (short) 1))).all());
        }
        try (KafkaProducer<byte[], byte[]> p = new KafkaProducer<>(kopd.producerProps())) {
            for (int i = 0; i < RECORDS; i++) {
                p.send(new ProducerRecord<>(TOPIC, 0, null, ("v" + i).getBytes())).get(30, TimeUnit.SECONDS);
            }
        }
    }

    @AfterAll
    static void stop() {
        if (kopd != null) {
            kopd.close();
        }
    }

    static Util.ToolResult tool(String name, String... args) throws Exception {
        List<String> cmd = new ArrayList<>(List.of(Util.peerTool(name).toString(), "--bootstrap-server", kopd.bootstrap()));
        cmd.addAll(Arrays.asList(args));
        Util.ToolResult r = Util.runTool(scratch, 90, null, cmd);
        assertEquals(0, r.status(), name + " " + String.join(" ", args) + "\n" + r.describe());
        return r;
    }

    /** Non-blank lines of a tool's table output, split on its tabs and padding. */
    static List<String[]> rows(String out) {
        List<String[]> rows = new ArrayList<>();
        for (String l : out.split("\n")) {
            if (!l.isBlank()) {
                rows.add(l.strip().split("\\s+"));
            }
        }
        return rows;
    }

    @Test
    @Timeout(value = 200, unit = TimeUnit.SECONDS)
    void describeProducersShowsTheIdempotentProducer() throws Exception {
        List<String[]> rows = rows(tool("kafka-transactions.sh", "describe-producers", "--topic", TOPIC, "--partition", "0").out());
        assertEquals(List.of("ProducerId", "ProducerEpoch", "LatestCoordinatorEpoch", "LastSequence", "LastTimestamp",
                "CurrentTransactionStartOffset"), List.of(rows.get(0)));
        assertEquals(2, rows.size(), "one producer wrote partition 0: " + rows);
        String[] p = rows.get(1);
        assertEquals("0", p[1], "producer epoch");
        assertEquals("-1", p[2], "no transaction coordinator");
        assertEquals(String.valueOf(RECORDS - 1), p[3], "last sequence");
        assertTrue(Long.parseLong(p[4]) > 0, "last timestamp " + p[4]);
        assertEquals("None", p[5], "no open transaction");
        rows = rows(tool("kafka-transactions.sh", "describe-producers", "--topic", TOPIC, "--partition", "1").out());
        assertEquals(1, rows.size(), "no producer wrote partition 1: " + rows);
    }

    @Test
    @Timeout(value = 200, unit = TimeUnit.SECONDS)
    void logDirsListEachCoresLedgerDirectory() throws Exception {
        String json = tool("kafka-log-dirs.sh", "--describe", "--topic-list", TOPIC).out();
        for (int core = 0; core < 2; core++) {
            String dir = dataDir.resolve("ledgers").resolve("core-" + core).toString();
            assertTrue(json.contains("\"broker\":" + core + ",\"logDirs\":[{"), "broker " + core + " in " + json);
            assertTrue(json.contains("\"logDir\":\"" + dir + "\""), dir + " in " + json);
        }
        Matcher m = Pattern.compile("\\{\"partition\":\"" + TOPIC + "-(\\d)\",\"size\":(\\d+),").matcher(json);
        Map<Integer, Long> sizes = new java.util.TreeMap<>();
        while (m.find()) {
            sizes.put(Integer.parseInt(m.group(1)), Long.parseLong(m.group(2)));
        }
        assertEquals(2, sizes.size(), "both partitions listed, once: " + json);
        assertTrue(sizes.get(0) > RECORDS * 2, "partition 0 holds the records: " + sizes);
        assertEquals(0L, sizes.get(1), "partition 1 is empty: " + sizes);
    }

    @Test
    @Timeout(value = 300, unit = TimeUnit.SECONDS)
    void readOnlyToolsAnswerAsOnASingleKafkaNode() throws Exception {
        assertTrue(tool("kafka-client-metrics.sh", "--list").out().isBlank(), "no client-metrics subscriptions");
        String features = tool("kafka-features.sh", "describe").out();
        assertTrue(Pattern.compile("Feature: metadata\\.version\\s+SupportedMinVersion: 3\\.3-IV3\\s+SupportedMaxVersion: 4\\.4-IV\\d"
                + "\\s+FinalizedVersionLevel: 4\\.4-IV\\d").matcher(features).find(), features);
        assertTrue(tool("kafka-leader-election.sh", "--election-type", "PREFERRED", "--topic", TOPIC, "--partition", "0")
                .out().contains("Valid replica already elected for partitions " + TOPIC + "-0"));
        assertTrue(tool("kafka-reassign-partitions.sh", "--list").out().contains("No partition reassignments found."));
    }

    @Test
    @Timeout(value = 200, unit = TimeUnit.SECONDS)
    void consumerValidatesItsPositionWithOffsetForLeaderEpoch() throws Exception {
        TopicPartition tp = new TopicPartition(TOPIC, 0);
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(kopd.consumerProps())) {
            c.assign(List.of(tp));
            // A position read under epoch 0 that the log still holds: validated, then read.
            c.seek(tp, new OffsetAndMetadata(RECORDS - 2, Optional.of(0), ""));
            int read = 0;
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (read < 2 && System.nanoTime() < deadline) {
                ConsumerRecords<byte[], byte[]> recs = c.poll(Duration.ofMillis(500));
                read += recs.count();
            }
            assertEquals(2, read);
            // A position past where epoch 0 ended: the log "lost" it, which only the
            // OffsetForLeaderEpoch answer can tell (without it the client sees out of range).
            c.seek(tp, new OffsetAndMetadata(RECORDS + 5, Optional.of(0), ""));
            LogTruncationException e = assertThrows(LogTruncationException.class, () -> {
                long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
                while (System.nanoTime() < until) {
                    c.poll(Duration.ofMillis(500));
                }
            });
            OffsetAndMetadata divergent = e.divergentOffsets().get(tp);
            assertEquals(RECORDS, divergent.offset(), "epoch 0 ends at the log end");
            assertEquals(Optional.of(0), divergent.leaderEpoch());
            assertInstanceOf(LogTruncationException.class, e);
        }
    }
}
