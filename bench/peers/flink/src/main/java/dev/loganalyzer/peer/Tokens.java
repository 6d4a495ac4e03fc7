package dev.loganalyzer.peer;

import org.apache.flink.table.functions.ScalarFunction;

import java.util.LinkedHashSet;
import java.util.Locale;
import java.util.Set;

/**
 * The keyword tokens of a message (DESIGN §4): lowercase it; a token is a maximal run of
 * alphanumerics and '_'; tokens of 2..=64 characters count; each kept once, in order of first
 * appearance. Returned as a PostgreSQL array literal with every element quoted (so a token "null"
 * stays a string), which the JDBC sink sends untyped for the server to cast to text[].
 */
public class Tokens extends ScalarFunction {
    public String eval(String message) {
        if (message == null) {
            return "{}";
        }
        String lower = message.toLowerCase(Locale.ROOT);
        Set<String> seen = new LinkedHashSet<>();
        int i = 0;
        int n = lower.length();
        while (i < n) {
            int cp = lower.codePointAt(i);
            if (!isWord(cp)) {
                i += Character.charCount(cp);
                continue;
            }
            int start = i;
            int chars = 0;
            while (i < n) {
                cp = lower.codePointAt(i);
                if (!isWord(cp)) {
                    break;
                }
                i += Character.charCount(cp);
                chars++;
            }
            if (chars >= 2 && chars <= 64) {
                seen.add(lower.substring(start, i));
            }
        }
        StringBuilder out = new StringBuilder(message.length() + 16);
        out.append('{');
        boolean first = true;
        for (String t : seen) {
            if (!first) {
                out.append(',');
            }
            first = false;
            out.append('"').append(t).append('"');
        }
        return out.append('}').toString();
    }

    private static boolean isWord(int cp) {
        return cp == '_' || Character.isLetterOrDigit(cp) || Character.getType(cp) == Character.LETTER_NUMBER
                || Character.getType(cp) == Character.OTHER_NUMBER;
    }
}
