package report

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"syscall"
)

// RunTier is the main of a tier program built as its own module (kubeletmgr, tier3): flags
// -repo and -fixture, a context cancelled by SIGINT/SIGTERM so the tier stops what it started,
// exit 1 when any check failed.
func RunTier(run func(ctx context.Context, repo, fixture string) (failed bool)) {
	repo := flag.String("repo", ".", "Tessera checkout (built)")
	fixture := flag.String("fixture", "h100-sxm-8x", "fixture node")
	flag.Parse()
	// A reader that went away must not kill us before we stop what we started.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	failed := run(ctx, *repo, *fixture)
	stop()
	if failed {
		os.Exit(1)
	}
}
