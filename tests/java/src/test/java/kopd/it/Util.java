package kopd.it;

import static org.junit.jupiter.api.Assertions.fail;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.TopicPartitionInfo;

final class Util {
    static final long TIMEOUT_S = 30;

    private Util() {}

    /** What an external tool printed and how it exited. */
    record ToolResult(int status, String out, String err) {
        String describe() {
            return "exit " + status + "\n--- stdout ---\n" + out + "\n--- stderr ---\n" + err;
        }
    }

    /** Runs a command with `stdin` (null: /dev/null), bounded by `timeoutSeconds`. */
    static ToolResult runTool(Path scratch, long timeoutSeconds, File stdin, List<String> cmd) throws Exception {
        File out = Files.createTempFile(scratch, "out", ".txt").toFile();
        File err = Files.createTempFile(scratch, "err", ".txt").toFile();
        Process p = new ProcessBuilder(cmd)
                .redirectInput(ProcessBuilder.Redirect.from(stdin != null ? stdin : new File("/dev/null")))
                .redirectOutput(out)
                .redirectError(err)
                .start();
        if (!p.waitFor(timeoutSeconds, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            p.waitFor(10, TimeUnit.SECONDS);
            fail("timed out after " + timeoutSeconds + " s: " + cmd + "\n--- stdout ---\n"
                    + Files.readString(out.toPath()) + "\n--- stderr ---\n" + Files.readString(err.toPath()));
        }
        return new ToolResult(p.exitValue(),
                Files.readString(out.toPath(), StandardCharsets.UTF_8),
                Files.readString(err.toPath(), StandardCharsets.UTF_8));
    }

    /** A Kafka CLI wrapper installed by scripts/install-peers.sh. */
    static Path peerTool(String name) {
        Path p = Kopd.repo().resolve(".peers/bin").resolve(name);
        if (!Files.isExecutable(p)) {
            fail(p + " is missing: run scripts/install-peers.sh");
        }
        return p;
    }

    /** Bounded get. */
    static <T> T get(KafkaFuture<T> f) throws Exception {
        return f.get(TIMEOUT_S, TimeUnit.SECONDS);
    }

    /** Bounded get that returns the cause of a failed future (or fails if it succeeded). */
    static Throwable failure(KafkaFuture<?> f) throws Exception {
        try {
            Object v = f.get(TIMEOUT_S, TimeUnit.SECONDS);
            throw new AssertionError("expected the request to fail, but it succeeded: " + v);
        } catch (ExecutionException e) {
            return e.getCause();
        }
    }

    interface Check {
        void run() throws Exception;
    }

    /**
     * Retries {@code check} until it passes or {@code within} elapses (metadata in a real
     * Kafka cluster propagates asynchronously, so tests allow it a short while).
     */
    static void eventually(Duration within, Check check) throws Exception {
        long deadline = System.nanoTime() + within.toNanos();
        while (true) {
            try {
                check.run();
                return;
            } catch (Exception | AssertionError e) {
                if (System.nanoTime() > deadline) {
                    throw e;
                }
                Thread.sleep(200);
            }
        }
    }

    static Set<String> listTopics(Admin admin) throws Exception {
        return get(admin.listTopics().names());
    }

    static TopicDescription describe(Admin admin, String topic) throws Exception {
        return get(admin.describeTopics(List.of(topic)).allTopicNames()).get(topic);
    }

    /** partition -> leader id */
    static Map<Integer, Integer> leaders(TopicDescription d) {
        Map<Integer, Integer> m = new TreeMap<>();
        for (TopicPartitionInfo p : d.partitions()) {
            m.put(p.partition(), p.leader() == null ? -1 : p.leader().id());
        }
        return m;
    }

    static Set<Integer> leaderIds(TopicDescription d) {
        return leaders(d).values().stream().collect(Collectors.toCollection(java.util.TreeSet::new));
    }

    /** Deletes a directory tree, deepest entries first; what cannot be deleted stays. */
    static void deleteTree(Path dir) throws java.io.IOException {
        try (var paths = Files.walk(dir)) {
            paths.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        }
    }
}
