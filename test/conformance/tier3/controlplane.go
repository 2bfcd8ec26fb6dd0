package main

import (
	"context"
	"fmt"

	"github.com/spf13/pflag"
	kcm "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kcmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
	"k8s.io/kubernetes/cmd/kube-controller-manager/names"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	scheduleroptions "k8s.io/kubernetes/cmd/kube-scheduler/app/options"
)

// startScheduler runs kube-scheduler (cmd/kube-scheduler/app) in this process against the
// server of kubeconfig, under ctx: the stock command's Setup and Run, without its signal
// context. Feature gates are process-wide: the API server's --feature-gates set them already
// (the scheduler's DynamicResources plugin reads the same gate), so none are passed here.
// No leader election (one scheduler), no serving port (nothing scrapes it).
func startScheduler(ctx context.Context, kubeconfig string, done chan<- error) error {
	opts := scheduleroptions.NewOptions()
	fs := pflag.NewFlagSet("kube-scheduler", pflag.ContinueOnError)
	for _, f := range opts.Flags.FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse([]string{"--kubeconfig=" + kubeconfig, "--leader-elect=false", "--secure-port=0"}); err != nil {
		return err
	}
	cc, sched, err := scheduler.Setup(ctx, opts)
	if err != nil {
		return fmt.Errorf("kube-scheduler setup: %w", err)
	}
	go func() { done <- scheduler.Run(ctx, cc, sched) }()
	return nil
}

// startControllerManager runs kube-controller-manager (cmd/kube-controller-manager/app) with
// only the ResourceClaim controller, which creates a pod's ResourceClaims from its
// ResourceClaimTemplates and removes reservations of finished pods.
func startControllerManager(ctx context.Context, kubeconfig string, done chan<- error) error {
	s, err := kcmoptions.NewKubeControllerManagerOptions()
	if err != nil {
		return err
	}
	all, off, aliases := kcm.KnownControllers(), kcm.ControllersDisabledByDefault(), kcm.ControllerAliases()
	nfs := s.Flags(all, off, aliases)
	fs := pflag.NewFlagSet("kube-controller-manager", pflag.ContinueOnError)
	for _, f := range nfs.FlagSets {
		fs.AddFlagSet(f)
	}
	args := []string{"--kubeconfig=" + kubeconfig, "--leader-elect=false", "--secure-port=0", "--controllers=" + names.ResourceClaimController}
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := s.Config(ctx, all, off, aliases)
	if err != nil {
		return fmt.Errorf("kube-controller-manager config: %w", err)
	}
	go func() { done <- kcm.Run(ctx, c.Complete()) }()
	return nil
}
