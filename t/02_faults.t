# Every fault of docs/DESIGN.md section 2, rule 4, each on its own certificate:
#  1. no good response yet: nothing stapled, one log line with the reason;
#  2. the responder recovers: stapled;
#  3. the fault returns at renewal: the previous good response is still
#     stapled (never replaced by the error);
#  4. the responder recovers again: a newer response replaces it.
use strict;
use warnings FATAL => 'all';
use Apache::Test;
use lib 't/lib';
use RSTest;
use Time::HiRes qw(time sleep);

# fault => what the log line must say about it
my %why = (
    unauthorized     => qr/responder-error \(responder answered unauthorized\)/,
    trylater         => qr/responder-error \(responder answered tryLater\)/,
    internalerror    => qr/responder-error \(responder answered internalError\)/,
    malformedrequest => qr/responder-error \(responder answered malformedRequest\)/,
    garbage          => qr/transport \(HTTP exchange failed/,
    truncated        => qr/transport \(HTTP exchange failed: inconsistent content length/,
    empty            => qr/transport \(HTTP exchange failed/,
    http500          => qr/http \(HTTP exchange failed: received error \(code=500/,
    close            => qr/transport \(HTTP exchange failed|transport \(responder closed/,
    hang             => qr/transport \(HTTP exchange: timed out after 2000 ms\)/,
    wrongcert        => qr/wrong-certificate/,
    badsig           => qr/bad-signature/,
    wrongsigner      => qr/bad-signature/,
    unknown          => qr/unknown \(responder does not know the certificate\)/,
    expired          => qr/expired \(nextUpdate has passed\)/,
    notyetvalid      => qr/not-yet-valid/,
    nonextupdate     => qr/no-nextupdate/,
    wrongtype        => qr/http \(HTTP exchange failed: unexpected content type/,
    refused          => qr/transport \(cannot connect to 127\.0\.0\.1:\d+/,
    # hostile responders
    huge             => qr/transport \(HTTP exchange failed: (response too large|max resp len exceeded)/,
    trickle          => qr/transport \(HTTP exchange: timed out after 2000 ms\)/,
    clmore           => qr/transport \(HTTP exchange failed: inconsistent content length/,
    clless           => qr/transport \(HTTP exchange failed: inconsistent content length/,
    chunked          => qr/transport \(HTTP exchange failed/,
    redirect         => qr/http \(HTTP exchange failed: redirection not (allowed|supported|enabled)/,
    noread           => qr/transport \(HTTP exchange: timed out after 2000 ms\)/,
);
my @faults = sort keys %why;
plan tests => 5 * @faults;

my $VALIDITY = 12;

# 1. started in the fault: nothing to staple, and the reason is logged
for my $f (@faults) {
    my $h = RSTest::handshake("f-$f");
    ok($h->{ok} && !$h->{stapled}) or warn "# f-$f stapled before any good response\n";
}
my $log = RSTest::wait_for(sub {
    my $l = RSTest::error_log();
    (grep { $l !~ /RS0202: OCSP fetch for CN=f-$_\.rs\.test,.*failed after \d+ ms: $why{$_}/ } @faults) ? 0 : $l
}, 8) || RSTest::error_log();
for my $f (@faults) {
    ok($log =~ /RS0202: OCSP fetch for CN=f-$f\.rs\.test,.*failed after \d+ ms: $why{$f}.*nothing valid to staple/)
        or warn "# no log line for f-$f matching $why{$f}\n";
}

# 2. recovery: short-lived responses so that renewal comes in seconds
RSTest::set_mode("f-$_", 'good', $VALIDITY) for @faults;
my %first;
RSTest::wait_for(sub {
    for my $f (grep { !$first{$_} } @faults) {
        my $h = RSTest::handshake("f-$f");
        $first{$f} = $h if $h->{stapled} && $h->{status} eq 'good'
            && $h->{next_update} - $h->{this_update} == $VALIDITY;
    }
    @faults == keys %first;
}, 10, 0.1);
ok($first{$_}) or warn "# f-$_ not stapled after recovery\n" for @faults;

# 3. the fault is back when renewal is due (half the lifetime, +-10 %)
RSTest::set_mode("f-$_", $_) for @faults;
my $since = time;
# "refused" never reaches the responder: its attempt shows in the error log
sub attempted {
    my $f = shift;
    return RSTest::error_log() =~ /RS0202: OCSP fetch for CN=f-refused\.rs\.test,.*still stapling/
        if $f eq 'refused';
    return grep { $_->{mode} eq $f && $_->{t} >= $since } @{ RSTest::requests("f-$f") };
}
RSTest::wait_for(sub { !grep { !attempted($_) } @faults }, $VALIDITY * 0.8, 0.2);
for my $f (@faults) {
    my $h = RSTest::handshake("f-$f");
    my $same = $first{$f} && $h->{stapled} && $h->{this_update} == $first{$f}{this_update}
        && $h->{status} eq 'good';
    ok($same) or warn "# f-$f: previous good response not stapled during the fault\n";
}

# 4. recovery again: a newer response replaces the kept one
RSTest::set_mode("f-$_", 'good', 3600) for @faults;
my %newer;
RSTest::wait_for(sub {
    for my $f (grep { !$newer{$_} } @faults) {
        my $h = RSTest::handshake("f-$f");
        $newer{$f} = 1 if $h->{stapled} && $first{$f} && $h->{this_update} > $first{$f}{this_update};
    }
    @faults == keys %newer;
}, 10, 0.2);
ok($newer{$_}) or warn "# f-$_: no newer response after the second recovery\n" for @faults;
