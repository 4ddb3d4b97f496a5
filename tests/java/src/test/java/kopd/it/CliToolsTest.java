package kopd.it;

import static kopd.it.Util.get;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Apache Kafka 4.4.0's console producer, console consumer and get-offsets tool against kopd
 * (installed into .peers/bin by scripts/install-peers.sh).
 */
class CliToolsTest {
    @TempDir
    static Path dataDir;

    @TempDir
    static Path scratch;

    static Kopd kopd;

    @BeforeAll
    static void startKopd() throws Exception {
        kopd = Kopd.start(dataDir, 2);
    }

    @AfterAll
    static void stopKopd() {
        if (kopd != null) {
            kopd.close();
        }
    }

    static Util.ToolResult run(long timeoutSeconds, File stdin, List<String> cmd) throws Exception {
        return Util.runTool(scratch, timeoutSeconds, stdin, cmd);
    }

    static List<String> tool(String name, String... args) {
        Path p = Kopd.repo().resolve(".peers/bin").resolve(name);
        if (!Files.isExecutable(p)) {
            fail(p + " is missing: run scripts/install-peers.sh");
        }
        List<String> cmd = new ArrayList<>();
        cmd.add(p.toString());
        cmd.add("--bootstrap-server");
        cmd.add(kopd.bootstrap());
        cmd.addAll(List.of(args));
        return cmd;
    }

    static void createTopic(String topic, int partitions) throws Exception {
        try (Admin admin = kopd.admin()) {
            get(admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1))).all());
        }
    }

    /** key -> values in input order; keys map to one partition each, so this order must survive. */
    static Map<String, List<String>> byKey(List<String> keyValueLines, String sep) {
        Map<String, List<String>> m = new LinkedHashMap<>();
        for (String l : keyValueLines) {
            int i = l.indexOf(sep);
            assertTrue(i >= 0, "no separator in line: " + l);
            m.computeIfAbsent(l.substring(0, i), k -> new ArrayList<>()).add(l.substring(i + sep.length()));
        }
        return m;
    }

    static Map<Integer, Long> getOffsets(String topic, String... extra) throws Exception {
        List<String> args = new ArrayList<>(List.of("--topic", topic));
        args.addAll(List.of(extra));
        Util.ToolResult r = run(90, null, tool("kafka-get-offsets.sh", args.toArray(new String[0])));
        assertEquals(0, r.status(), "kafka-get-offsets\n" + r.describe());
        Map<Integer, Long> m = new TreeMap<>();
        Pattern line = Pattern.compile("^" + Pattern.quote(topic) + ":(\\d+):(\\d*)$");
        for (String l : r.out().split("\n")) {
            if (l.isBlank()) {
                continue;
            }
            Matcher mm = line.matcher(l.strip());
            assertTrue(mm.matches(), "unexpected kafka-get-offsets line '" + l + "'\n" + r.describe());
            m.put(Integer.parseInt(mm.group(1)), mm.group(2).isEmpty() ? -1L : Long.parseLong(mm.group(2)));
        }
        return m;
    }

    @Test
    @Timeout(value = 400, unit = TimeUnit.SECONDS)
    void consoleProducerConsumerAndGetOffsets() throws Exception {
        String topic = "cli-pc";
        int partitions = 3;
        createTopic(topic, partitions);

        int n = 60;
        List<String> input = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            input.add("key" + (i % 7) + ":value " + i + " \u00fcnicode=" + "x".repeat(i));
        }
        Path in = scratch.resolve("producer-input.txt");
        Files.writeString(in, String.join("\n", input) + "\n", StandardCharsets.UTF_8);
        Util.ToolResult produced = run(120, in.toFile(), tool("kafka-console-producer.sh", "--topic", topic,
                "--reader-property", "parse.key=true", "--reader-property", "key.separator=:"));
        assertEquals(0, produced.status(), "kafka-console-producer\n" + produced.describe());

        Map<Integer, Long> end = getOffsets(topic);
        assertEquals(partitions, end.size(), "partitions listed by kafka-get-offsets: " + end);
        assertEquals(n, end.values().stream().mapToLong(Long::longValue).sum(), "sum of end offsets " + end);
        Map<Integer, Long> earliest = getOffsets(topic, "--time", "-2");
        assertEquals(Map.of(0, 0L, 1, 0L, 2, 0L), earliest, "earliest offsets");

        // per partition, so no consumer group is needed: the console consumer then uses assign()
        Map<String, List<String>> consumed = new HashMap<>();
        int total = 0;
        for (Map.Entry<Integer, Long> e : end.entrySet()) {
            if (e.getValue() == 0) {
                continue;
            }
            Util.ToolResult r = run(120, null, tool("kafka-console-consumer.sh", "--topic", topic,
                    "--partition", e.getKey().toString(), "--from-beginning",
                    "--max-messages", e.getValue().toString(),
                    "--formatter-property", "print.key=true", "--formatter-property", "key.separator=:",
                    "--timeout-ms", "20000"));
            assertEquals(0, r.status(), "kafka-console-consumer partition " + e.getKey() + "\n" + r.describe());
            List<String> lines = r.out().lines().filter(l -> !l.isEmpty()).collect(Collectors.toList());
            assertEquals(e.getValue(), (long) lines.size(), "lines printed for partition " + e.getKey() + "\n" + r.describe());
            total += lines.size();
            Map<String, List<String>> part = byKey(lines, ":");
            for (Map.Entry<String, List<String>> kv : part.entrySet()) {
                assertTrue(consumed.put(kv.getKey(), kv.getValue()) == null,
                        "key " + kv.getKey() + " found in more than one partition");
            }
        }
        assertEquals(n, total, "messages consumed");
        assertEquals(byKey(input, ":"), consumed, "consumed key -> values (in order) equals produced");
    }

    /** The console consumer without --partition subscribes with a consumer group. */
    @Test
    @Timeout(value = 200, unit = TimeUnit.SECONDS)
    void consoleConsumerWithGroup() throws Exception {
        String topic = "cli-group";
        createTopic(topic, 1);
        int n = 25;
        List<String> input = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            input.add("k" + i + ":v" + i);
        }
        Path in = scratch.resolve("group-input.txt");
        Files.writeString(in, String.join("\n", input) + "\n", StandardCharsets.UTF_8);
        Util.ToolResult produced = run(120, in.toFile(), tool("kafka-console-producer.sh", "--topic", topic,
                "--reader-property", "parse.key=true", "--reader-property", "key.separator=:"));
        assertEquals(0, produced.status(), produced.describe());
        assertEquals(Map.of(0, (long) n), getOffsets(topic));
        Util.ToolResult r = run(120, null, tool("kafka-console-consumer.sh", "--topic", topic, "--from-beginning",
                "--max-messages", Integer.toString(n), "--formatter-property", "print.key=true",
                "--formatter-property", "key.separator=:", "--timeout-ms", "20000"));
        assertEquals(0, r.status(), r.describe());
        assertEquals(input, r.out().lines().filter(l -> !l.isEmpty()).collect(Collectors.toList()), r.describe());
    }
}
