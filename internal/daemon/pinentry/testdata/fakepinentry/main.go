// Command fakepinentry is a pinentry for tests: it speaks Assuan on stdin
// and stdout like the real one, records every request line in $FAKE_LOG
// (first line: its pid), and answers according to the environment:
//
//	FAKE_PIN     the PIN GETPIN returns (sent percent-escaped, one D line per
//	             byte when FAKE_SPLIT is set, after a comment and a status)
//	FAKE_ANSWER  ok (default), cancel, notok, timeout, error, hang, exit
package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"time"
)

func main() {
	var log *os.File
	if p := os.Getenv("FAKE_LOG"); p != "" {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			fmt.Fprintln(os.Stderr, "fakepinentry:", err)
			os.Exit(2)
		}
		log = f
		fmt.Fprintf(log, "PID %d\n", os.Getpid())
	}
	out := bufio.NewWriter(os.Stdout)
	say := func(format string, a ...any) {
		fmt.Fprintf(out, format+"\n", a...)
		out.Flush()
	}
	say("OK Pleased to meet you")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		line := in.Text()
		if log != nil {
			fmt.Fprintln(log, line)
		}
		cmd, _, _ := strings.Cut(line, " ")
		switch cmd {
		case "CONFIRM", "GETPIN":
			switch os.Getenv("FAKE_ANSWER") {
			case "cancel":
				say("ERR 83886179 Operation cancelled <Pinentry>")
				continue
			case "notok":
				say("ERR 83886194 Not confirmed <Pinentry>")
				continue
			case "timeout":
				say("S ERROR fake.? 83886142 ")
				say("ERR 83886142 Timeout <Pinentry>")
				continue
			case "error":
				say("ERR 83918950 Inappropriate ioctl for device <Pinentry>")
				continue
			case "hang":
				time.Sleep(time.Hour)
			case "exit":
				os.Exit(3)
			}
			if cmd == "GETPIN" {
				say("# a comment the client ignores")
				say("S INFO fake")
				pin := os.Getenv("FAKE_PIN")
				if os.Getenv("FAKE_SPLIT") != "" {
					for i := 0; i < len(pin); i++ {
						say("D %s", escape(pin[i:i+1]))
					}
				} else if pin != "" {
					say("D %s", escape(pin))
				}
			}
			say("OK")
		case "BYE":
			say("OK closing connection")
			return
		case "OPTION":
			if strings.HasPrefix(line, "OPTION unknown") {
				say("ERR 83886254 Unknown option <Pinentry>")
				continue
			}
			say("OK")
		default:
			say("OK")
		}
	}
}

func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' || c < 0x20 {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
